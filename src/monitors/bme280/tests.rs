//! The BME280 driver over a scripted I2C bus: what it sends, what it makes of the
//! chip's answers, and the errors a user sees.

use std::sync::Arc;

use chrono::DateTime;
use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use embedded_hal_mock::eh1::delay::NoopDelay;
use embedded_hal_mock::eh1::i2c::{Mock, Transaction};

use super::*;
use crate::host::clock::MonotonicClock;
use crate::protocols::bme280::tests::example_registers;

const ADDR: u8 = 0x76;
/// adc_P = 415148 (0x655AC), adc_T = 519888 (0x7EED0), adc_H = 30000 (0x7530).
const DATA: [u8; 8] = [0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x75, 0x30];

fn settings(t: u8, p: u8, h: u8) -> Settings {
    Settings {
        temperature: Oversampling::new(t).unwrap(),
        pressure: Oversampling::new(p).unwrap(),
        humidity: Oversampling::new(h).unwrap(),
    }
}

fn init_transactions(addr: u8, chip_id: u8) -> Vec<Transaction> {
    let (c00, c26) = example_registers();
    vec![
        Transaction::write_read(addr, vec![0xD0], vec![chip_id]),
        Transaction::write_read(addr, vec![0x88], c00.to_vec()),
        Transaction::write_read(addr, vec![0xE1], c26.to_vec()),
    ]
}

fn measure_transactions(ctrl_hum: u8, ctrl_meas: u8, busy_polls: usize) -> Vec<Transaction> {
    let mut t = vec![
        Transaction::write(ADDR, vec![0xF2, ctrl_hum]),
        Transaction::write(ADDR, vec![0xF5, 0x00]),
        Transaction::write(ADDR, vec![0xF4, ctrl_meas]),
    ];
    for _ in 0..busy_polls {
        t.push(Transaction::write_read(ADDR, vec![0xF3], vec![0x08]));
    }
    t.push(Transaction::write_read(ADDR, vec![0xF3], vec![0x00]));
    t.push(Transaction::write_read(ADDR, vec![0xF7], DATA.to_vec()));
    t
}

#[test]
fn forced_measurement_with_configured_oversampling() {
    // osrs_t = 2 (010), osrs_p = 16 (101), forced (01): 0b010_101_01; osrs_h = 4 (011).
    let mut script = init_transactions(ADDR, 0x60);
    script.extend(measure_transactions(0b011, 0b0101_0101, 0));
    // The second poll reuses the calibration, and waits for a busy status to clear.
    script.extend(measure_transactions(0b011, 0b0101_0101, 2));
    let mut bus = Mock::new(&script);
    let mut driver = Driver::new(bus.clone(), NoopDelay::new(), ADDR, settings(2, 16, 4));
    for _ in 0..2 {
        let m = driver.measure().unwrap();
        // The double-precision formulas of datasheet 8.1 give 25.082478 °C,
        // 1006.532581 hPa and 55.000713 % for these raw values and this calibration
        // (see protocols::bme280's tests); fixed point agrees to its resolution.
        assert_eq!(m.temperature, 25.08);
        assert!((m.pressure - 1006.532581).abs() < 0.01, "{}", m.pressure);
        assert!((m.humidity - 55.000713).abs() < 0.005, "{}", m.humidity);
    }
    bus.done();
}

#[test]
fn a_bmp280_is_refused_by_its_chip_id() {
    let mut bus = Mock::new(&[Transaction::write_read(ADDR, vec![0xD0], vec![0x58])]);
    let mut driver = Driver::new(bus.clone(), NoopDelay::new(), ADDR, settings(1, 1, 1));
    let err = driver.measure().unwrap_err();
    assert_eq!(err, DriverError::WrongChip(0x58));
    let e = monitor_error(Path::new("/dev/i2c-1"), I2cAddress(ADDR), err);
    let text = e.to_string();
    assert!(matches!(e, MonitorError::Config { .. }), "{e:?}");
    assert!(text.contains("/dev/i2c-1 address 0x76"), "{text}");
    assert!(text.contains("BMP280") && text.contains("no humidity"), "{text}");
    bus.done();
}

#[test]
fn a_silent_address_names_bus_and_address_and_is_retried_from_scratch() {
    let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
    let mut script = vec![Transaction::write_read(ADDR + 1, vec![0xD0], vec![0x00]).with_error(nack)];
    // After the error the driver starts over with the chip id, and then succeeds.
    script.extend(init_transactions(ADDR + 1, 0x60));
    let mut bus = Mock::new(&script);
    // The mock checks the address; a sensor at 0x77 is asked at 0x77.
    let mut driver = Driver::new(bus.clone(), NoopDelay::new(), ADDR + 1, settings(1, 1, 1));
    let err = driver.measure().unwrap_err();
    let e = monitor_error(Path::new("/dev/i2c-3"), I2cAddress(ADDR + 1), err);
    assert!(matches!(e, MonitorError::Link { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("/dev/i2c-3 address 0x77") && text.contains("NACK"),
        "{text}"
    );
    // The next poll starts over: chip id and calibration are read again.
    assert!(driver.calibration.is_none());
    assert_eq!(driver.init().unwrap().h2, 362);
    bus.done();
}

#[test]
fn blank_calibration_is_invalid_data() {
    let mut bus = Mock::new(&[
        Transaction::write_read(ADDR, vec![0xD0], vec![0x60]),
        Transaction::write_read(ADDR, vec![0x88], vec![0xFF; 26]),
        Transaction::write_read(ADDR, vec![0xE1], vec![0xFF; 7]),
    ]);
    let mut driver = Driver::new(bus.clone(), NoopDelay::new(), ADDR, settings(1, 1, 1));
    let e = monitor_error(Path::new("/dev/i2c-1"), I2cAddress(ADDR), driver.measure().unwrap_err());
    assert!(matches!(e, MonitorError::InvalidData { .. }), "{e:?}");
    bus.done();
}

fn ctx() -> MonitorContext {
    let start = DateTime::parse_from_rfc3339("2026-11-24T06:00:00Z").unwrap().to_utc();
    MonitorContext {
        id: Arc::from("attic"),
        clock: Arc::new(MonotonicClock::starting_at(start)),
        data_dir: std::env::temp_dir(),
        poll_interval: std::time::Duration::from_secs(1),
        file: std::path::PathBuf::new(),
    }
}

fn config(yaml: &str) -> Result<Bme280Config, String> {
    let file = Path::new("attic.yaml");
    let device =
        crate::config::parse_device(file, &format!("type: bme280\n{yaml}"), &["sqlite"]).map_err(|e| e.to_string())?;
    match device.kind {
        crate::config::DeviceKind::Bme280(c) => Ok(c),
        other => Err(format!("{other:?}")),
    }
}

#[test]
fn address_is_read_as_hex_decimal_or_string() {
    assert_eq!(config("address: 0x77\n").unwrap().address, I2cAddress(0x77));
    assert_eq!(config("address: 118\n").unwrap().address, I2cAddress(0x76));
    assert_eq!(config("address: \"0x77\"\n").unwrap().address, I2cAddress(0x77));
    let c = config("").unwrap();
    assert_eq!(
        (c.bus.as_path(), c.address),
        (Path::new("/dev/i2c-1"), I2cAddress(0x76))
    );
    let e = config("address: 0x40\n").unwrap_err();
    assert!(e.contains("key `address`") && e.contains("0x76 or 0x77"), "{e}");
    let e = config("oversampling_pressure: 3\n").unwrap_err();
    assert!(
        e.contains("oversampling_pressure") && e.contains("1, 2, 4, 8 or 16"),
        "{e}"
    );
    let e = config("adress: 0x76\n").unwrap_err();
    assert!(e.contains("did you mean `address`"), "{e}");
}

#[tokio::test]
async fn a_missing_bus_is_a_config_error_naming_bus_and_address() {
    let c = config("bus: /dev/i2c-nonexistent-42\naddress: 0x77\n").unwrap();
    let mut monitor = Bme280Monitor::new(&c, ctx()).unwrap();
    let e = monitor.read().await.unwrap_err();
    assert!(matches!(e, MonitorError::Config { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("/dev/i2c-nonexistent-42 address 0x77") && text.contains("does not exist"),
        "{text}"
    );
}

#[test]
fn readings_carry_units_and_the_optional_dew_point() {
    let m = Measurement {
        temperature: 20.0,
        pressure: 1013.254,
        humidity: 50.0,
    };
    let plain = readings(&ctx(), &m, false);
    let names: Vec<&str> = plain.iter().map(|r| &*r.metric).collect();
    assert_eq!(names, vec!["temperature", "humidity", "pressure"]);
    assert_eq!(plain[2].unit, Unit::HectoPascal);
    assert_eq!(plain[2].value.as_f64(), Some(1013.25));
    let with_dew = readings(&ctx(), &m, true);
    assert_eq!(with_dew.len(), 4);
    // Magnus at 20 °C and 50 %: 9.2552 °C (see protocols::bme280's tests).
    assert_eq!(with_dew[3].value.as_f64(), Some(9.26));
    assert_eq!(with_dew[3].unit, Unit::Celsius);
}
