//! `type: bme280`: a Bosch BME280 on a Linux I2C bus (`/dev/i2c-N`), read in forced
//! mode once per poll: temperature, humidity, pressure and optionally the dew point.
//!
//! Why a small driver here rather than the `bme280` crate: that crate owns the delay
//! and the bus, measures on every call with fixed settings of its own, and in the
//! versions for embedded-hal 1.x reports humidity from a BMP280 as 0 rather than
//! failing — mesura needs the chip id checked (a BMP280 has no humidity), oversampling
//! from the config, and errors that name the bus and address. The register protocol
//! is five transactions; the compensation, which is the part worth sharing, is pure
//! code in `protocols::bme280`, tested against the datasheet. The driver is written
//! against embedded-hal 1.x's `I2c` trait, so tests replay a scripted bus
//! (embedded-hal-mock) and the daemon uses linux-embedded-hal's `I2cdev` (built with
//! its `i2c` feature only). I2C calls block, so every read runs on the blocking pool.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::{Error as _, ErrorKind, I2c};
use serde::{Deserialize, Serialize};

use super::{DeviceType, Monitor, MonitorContext, MonitorError};
use crate::config::common::CommonConfig;
use crate::protocols::bme280::{self as proto, Calibration, Measurement, Oversampling, Raw, Settings};
use crate::reading::{MetricSpec, Reading, Unit};

/// `type: bme280`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Bme280Config {
    /// The I2C bus device (`/dev/i2c-1` on a Raspberry Pi's GPIO header).
    #[serde(default = "default_bus")]
    pub bus: PathBuf,
    /// The sensor's address: `0x76` (SDO to GND) or `0x77` (SDO to VDDIO). In YAML
    /// `0x76`, `118` and `"0x76"` all work.
    #[serde(default = "default_address")]
    pub address: I2cAddress,
    /// Temperature oversampling: 1, 2, 4, 8 or 16 samples per reading.
    #[serde(default = "default_oversampling")]
    pub oversampling_temperature: u8,
    /// Pressure oversampling: 1, 2, 4, 8 or 16.
    #[serde(default = "default_oversampling")]
    pub oversampling_pressure: u8,
    /// Humidity oversampling: 1, 2, 4, 8 or 16.
    #[serde(default = "default_oversampling")]
    pub oversampling_humidity: u8,
    /// Also report `dew_point` (°C, Magnus formula from temperature and humidity).
    #[serde(default)]
    pub dew_point: bool,
}

pub fn default_bus() -> PathBuf {
    PathBuf::from("/dev/i2c-1")
}
pub fn default_address() -> I2cAddress {
    I2cAddress(0x76)
}
pub fn default_oversampling() -> u8 {
    1
}

/// A 7-bit I2C address, written `0x76` in messages and in `mesura check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct I2cAddress(pub u8);

impl std::fmt::Display for I2cAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:02x}", self.0)
    }
}

impl Serialize for I2cAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for I2cAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = I2cAddress;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an I2C address such as 0x76, 118 or \"0x76\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<I2cAddress, E> {
                u8::try_from(v)
                    .ok()
                    .filter(|a| *a < 0x80)
                    .map(I2cAddress)
                    .ok_or_else(|| E::custom(format!("{v} is not a 7-bit I2C address")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<I2cAddress, E> {
                let v = u64::try_from(v).map_err(|_| E::custom(format!("{v} is not a 7-bit I2C address")))?;
                self.visit_u64(v)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<I2cAddress, E> {
                let t = v.trim();
                let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => t.parse::<u64>(),
                };
                let n = parsed.map_err(|_| E::custom(format!("`{v}` is not an I2C address such as 0x76")))?;
                self.visit_u64(n)
            }
        }
        d.deserialize_any(V)
    }
}

impl Bme280Config {
    fn settings(&self) -> Option<Settings> {
        Some(Settings {
            temperature: Oversampling::new(self.oversampling_temperature)?,
            pressure: Oversampling::new(self.oversampling_pressure)?,
            humidity: Oversampling::new(self.oversampling_humidity)?,
        })
    }
}

impl DeviceType for Bme280Config {
    fn default_poll_interval() -> Duration {
        Duration::from_secs(60)
    }

    fn validate(&self, _common: &CommonConfig) -> Result<(), (String, String)> {
        if !matches!(self.address.0, 0x76 | 0x77) {
            return Err((
                "address".into(),
                format!("a BME280 answers at 0x76 or 0x77 only, not {}", self.address),
            ));
        }
        for (key, n) in [
            ("oversampling_temperature", self.oversampling_temperature),
            ("oversampling_pressure", self.oversampling_pressure),
            ("oversampling_humidity", self.oversampling_humidity),
        ] {
            if Oversampling::new(n).is_none() {
                return Err((key.into(), format!("must be 1, 2, 4, 8 or 16, not {n}")));
            }
        }
        Ok(())
    }

    fn metrics() -> Vec<MetricSpec> {
        all_metrics()
    }

    fn build(&self, ctx: MonitorContext) -> Result<Box<dyn Monitor>, MonitorError> {
        Ok(Box::new(Bme280Monitor::new(self, ctx)?))
    }
}

const METRICS: &[MetricSpec] = &[
    MetricSpec::gauge("temperature", Unit::Celsius, "air temperature"),
    MetricSpec::gauge("humidity", Unit::Percent, "relative humidity"),
    MetricSpec::gauge(
        "pressure",
        Unit::HectoPascal,
        "air pressure (at the sensor, not sea level)",
    ),
    MetricSpec::gauge("dew_point", Unit::Celsius, "dew point (with `dew_point: true`)"),
];

pub fn all_metrics() -> Vec<MetricSpec> {
    METRICS.to_vec()
}

/// Why the driver failed, before it is put in terms of the bus and address.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverError {
    /// An I2C transfer failed.
    Bus { kind: ErrorKind, message: String },
    /// A chip answered but it is not a BME280.
    WrongChip(u8),
    /// The measurement did not finish in time.
    StillMeasuring,
    /// The bytes made no sense.
    Data(proto::Bme280Error),
}

/// The register protocol over any embedded-hal 1.x I2C bus.
#[derive(Debug)]
pub struct Driver<I, D> {
    i2c: I,
    delay: D,
    address: u8,
    settings: Settings,
    /// Read once per driver (and again after any error: the chip may have been
    /// swapped or power-cycled).
    calibration: Option<Calibration>,
}

/// How many times the status register is polled after the datasheet's maximum
/// measurement time, 1 ms apart.
const STATUS_POLLS: u32 = 10;

impl<I, D> Driver<I, D>
where
    I: I2c,
    I::Error: std::fmt::Display,
    D: DelayNs,
{
    pub fn new(i2c: I, delay: D, address: u8, settings: Settings) -> Self {
        Driver {
            i2c,
            delay,
            address,
            settings,
            calibration: None,
        }
    }

    pub fn release(self) -> I {
        self.i2c
    }

    fn bus_error(e: I::Error) -> DriverError {
        DriverError::Bus {
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    fn read_regs(&mut self, reg: u8, buf: &mut [u8]) -> Result<(), DriverError> {
        self.i2c.write_read(self.address, &[reg], buf).map_err(Self::bus_error)
    }

    fn write_reg(&mut self, reg: u8, value: u8) -> Result<(), DriverError> {
        self.i2c.write(self.address, &[reg, value]).map_err(Self::bus_error)
    }

    fn init(&mut self) -> Result<Calibration, DriverError> {
        let mut id = [0u8; 1];
        self.read_regs(proto::REG_CHIP_ID, &mut id)?;
        if id[0] != proto::CHIP_ID_BME280 {
            return Err(DriverError::WrongChip(id[0]));
        }
        let mut c00 = [0u8; proto::CALIB_00_LEN];
        let mut c26 = [0u8; proto::CALIB_26_LEN];
        self.read_regs(proto::REG_CALIB_00, &mut c00)?;
        self.read_regs(proto::REG_CALIB_26, &mut c26)?;
        Calibration::parse(&c00, &c26).map_err(DriverError::Data)
    }

    /// One forced-mode measurement.
    pub fn measure(&mut self) -> Result<Measurement, DriverError> {
        let result = self.measure_once();
        if result.is_err() {
            self.calibration = None;
        }
        result
    }

    fn measure_once(&mut self) -> Result<Measurement, DriverError> {
        let calibration = match self.calibration {
            Some(c) => c,
            None => {
                let c = self.init()?;
                self.calibration = Some(c);
                c
            }
        };
        // ctrl_hum only takes effect with the ctrl_meas write that follows it.
        self.write_reg(proto::REG_CTRL_HUM, self.settings.ctrl_hum())?;
        // IIR filter off: it averages consecutive measurements, which for polls a
        // minute apart would only blur real changes.
        self.write_reg(proto::REG_CONFIG, 0)?;
        self.write_reg(proto::REG_CTRL_MEAS, self.settings.ctrl_meas_forced())?;
        self.delay.delay_us(self.settings.max_measurement_us());
        let mut status = [0u8; 1];
        let mut polls = 0;
        loop {
            self.read_regs(proto::REG_STATUS, &mut status)?;
            if status[0] & proto::STATUS_MEASURING == 0 {
                break;
            }
            polls += 1;
            if polls >= STATUS_POLLS {
                return Err(DriverError::StillMeasuring);
            }
            self.delay.delay_ms(1);
        }
        let mut data = [0u8; proto::DATA_LEN];
        self.read_regs(proto::REG_DATA, &mut data)?;
        proto::compensate(&calibration, Raw::parse(&data)).map_err(DriverError::Data)
    }
}

/// Puts a driver error in terms a user can act on, naming the bus and address.
pub fn monitor_error(bus: &Path, address: I2cAddress, e: DriverError) -> MonitorError {
    let at = format!("{} address {address}", bus.display());
    match e {
        DriverError::Bus { kind, message } => {
            if matches!(kind, ErrorKind::NoAcknowledge(_)) {
                MonitorError::link(format!(
                    "{at}: no device answers (NACK): check the wiring and the address (0x76 with SDO to GND, 0x77 with SDO to VDDIO; `i2cdetect -y 1` lists what answers)"
                ))
            } else {
                MonitorError::link(format!("{at}: I2C transfer failed: {message}"))
            }
        }
        DriverError::WrongChip(id) if proto::CHIP_IDS_BMP280.contains(&id) => MonitorError::config(format!(
            "{at}: the sensor is a BMP280 (chip id 0x{id:02x}), not a BME280 (0x60): it has no humidity sensor"
        )),
        DriverError::WrongChip(id) => {
            MonitorError::config(format!("{at}: the device has chip id 0x{id:02x}, not a BME280 (0x60)"))
        }
        DriverError::StillMeasuring => MonitorError::link(format!("{at}: the measurement did not finish in time")),
        DriverError::Data(e) => MonitorError::invalid_data(format!("{at}: {e}")).caused_by(e),
    }
}

type LinuxDriver = Driver<LinuxBus, linux_embedded_hal::Delay>;

/// linux-embedded-hal's bus, with the errno a missing device gives on a Pi
/// (EREMOTEIO, from i2c-bcm2835) reported as the NACK it is: linux-embedded-hal
/// maps only ENXIO to `NoAcknowledge` and EREMOTEIO to `Other`.
pub struct LinuxBus(linux_embedded_hal::I2cdev);

impl std::fmt::Debug for LinuxBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinuxBus")
    }
}

#[derive(Debug)]
pub struct LinuxBusError {
    errno: Option<i32>,
    message: String,
}

impl std::fmt::Display for LinuxBusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl embedded_hal::i2c::Error for LinuxBusError {
    fn kind(&self) -> ErrorKind {
        use nix::errno::Errno;
        match self.errno {
            Some(e) if e == Errno::ENXIO as i32 || e == Errno::EREMOTEIO as i32 => {
                ErrorKind::NoAcknowledge(embedded_hal::i2c::NoAcknowledgeSource::Address)
            }
            _ => ErrorKind::Other,
        }
    }
}

impl embedded_hal::i2c::ErrorType for LinuxBus {
    type Error = LinuxBusError;
}

impl I2c for LinuxBus {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [embedded_hal::i2c::Operation<'_>],
    ) -> Result<(), Self::Error> {
        use linux_embedded_hal::i2cdev::linux::LinuxI2CError;
        self.0.transaction(address, operations).map_err(|e| LinuxBusError {
            errno: match e.inner() {
                LinuxI2CError::Errno(n) => Some(*n),
                LinuxI2CError::Io(io) => io.raw_os_error(),
            },
            message: e.to_string(),
        })
    }
}

pub struct Bme280Monitor {
    config: Bme280Config,
    settings: Settings,
    ctx: MonitorContext,
    /// The open bus, kept between polls; dropped after an error so the next poll
    /// reopens it (a USB I2C adapter may have come back under the same name).
    driver: Option<LinuxDriver>,
}

impl std::fmt::Debug for Bme280Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bme280Monitor")
            .field("config", &self.config)
            .field("settings", &self.settings)
            .field("bus_open", &self.driver.is_some())
            .finish_non_exhaustive()
    }
}

impl Bme280Monitor {
    pub fn new(config: &Bme280Config, ctx: MonitorContext) -> Result<Self, MonitorError> {
        let settings = config
            .settings()
            .ok_or_else(|| MonitorError::config("oversampling must be 1, 2, 4, 8 or 16"))?;
        Ok(Bme280Monitor {
            config: config.clone(),
            settings,
            ctx,
            driver: None,
        })
    }
}

fn open_bus(bus: &Path, address: I2cAddress, settings: Settings) -> Result<LinuxDriver, MonitorError> {
    let i2c = linux_embedded_hal::I2cdev::new(bus).map_err(|e| {
        let at = format!("{} address {address}", bus.display());
        let io = match &e {
            linux_embedded_hal::i2cdev::linux::LinuxI2CError::Io(io) => Some(io.kind()),
            _ => None,
        };
        match io {
            Some(std::io::ErrorKind::NotFound) => MonitorError::config(format!(
                "{at}: the I2C bus does not exist (on a Raspberry Pi enable I2C with `raspi-config`, then reboot)"
            )),
            Some(std::io::ErrorKind::PermissionDenied) => MonitorError::config(format!(
                "{at}: permission denied opening the I2C bus (add mesura's user to the `i2c` group)"
            )),
            _ => MonitorError::link(format!("{at}: cannot open the I2C bus: {e}")).caused_by(e),
        }
    })?;
    Ok(Driver::new(
        LinuxBus(i2c),
        linux_embedded_hal::Delay,
        address.0,
        settings,
    ))
}

#[async_trait]
impl Monitor for Bme280Monitor {
    async fn read(&mut self) -> Result<Vec<Reading>, MonitorError> {
        let bus = self.config.bus.clone();
        let address = self.config.address;
        let settings = self.settings;
        let driver = self.driver.take();
        let (driver, result) = tokio::task::spawn_blocking(move || {
            let mut driver = match driver {
                Some(d) => d,
                None => match open_bus(&bus, address, settings) {
                    Ok(d) => d,
                    Err(e) => return (None, Err(e)),
                },
            };
            match driver.measure() {
                Ok(m) => (Some(driver), Ok(m)),
                Err(e) => (None, Err(monitor_error(&bus, address, e))),
            }
        })
        .await
        .map_err(|e| MonitorError::link(format!("the I2C read task failed: {e}")))?;
        self.driver = driver;
        let m = result?;
        Ok(readings(&self.ctx, &m, self.config.dew_point))
    }

    /// Complete: the three readings, and `dew_point` when set.
    fn metrics_complete(&self) -> bool {
        true
    }

    fn metrics(&self) -> &[MetricSpec] {
        if self.config.dew_point {
            METRICS
        } else {
            &METRICS[..3]
        }
    }
}

fn readings(ctx: &MonitorContext, m: &Measurement, dew_point: bool) -> Vec<Reading> {
    let now = ctx.clock.now();
    let round = |v: f64, digits: i32| (v * 10f64.powi(digits)).round() / 10f64.powi(digits);
    let mut out = vec![
        METRICS[0].reading(&ctx.id, round(m.temperature, 2), now),
        METRICS[1].reading(&ctx.id, round(m.humidity, 2), now),
        METRICS[2].reading(&ctx.id, round(m.pressure, 2), now),
    ];
    if dew_point {
        if let Some(td) = proto::dew_point(m.temperature, m.humidity) {
            out.push(METRICS[3].reading(&ctx.id, round(td, 2), now));
        }
    }
    out
}

#[cfg(test)]
mod tests;
