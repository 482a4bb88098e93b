//! Monitors read devices. One module per device type, registered by one line in
//! the `device_types!` list below; [`build`] turns a device's config into its monitor.

pub mod bme280;
pub mod control;
pub mod derived;
pub mod device_time;
mod device_type;
pub mod dsmr;
mod error;
pub mod evohome;
pub mod homewizard;
pub mod http_client;
pub mod modbus;
pub mod mqtt;
pub mod multical;
pub mod neasmart;
pub mod openweathermap;
pub mod p1_metrics;
pub mod prices;
pub mod simulated;
pub mod system;

use std::path::PathBuf;

use async_trait::async_trait;

pub use self::control::{WriteError, Written};
pub use self::device_type::DeviceType;
pub use self::error::{describe_link_io, Cause, MonitorError};
use crate::host::clock::SharedClock;
use crate::reading::{DeviceId, MetricSpec, MonthlyPeaks, Reading};

// Adding a device type: its module above, its line here (see docs/architecture.md).
device_type::device_types! {
    /// Built-in simulated devices with realistic curves: no hardware needed.
    Simulated("simulated") => simulated::SimulatedConfig,
    /// Kamstrup MULTICAL heat meters over KMP, through an optical head.
    Multical("multical") => multical::MulticalConfig,
    /// A Bosch BME280 (temperature, humidity, pressure) on a Linux I2C bus.
    Bme280("bme280") => bme280::Bme280Config,
    /// The host itself: CPU temperature, load, memory, disk space, uptime.
    System("system") => system::SystemConfig,
    /// Current weather from OpenWeatherMap's API (an API key is needed).
    Openweathermap("openweathermap") => openweathermap::OpenWeatherMapConfig,
    /// Evohome and other Resideo Total Connect Comfort (EMEA) heating systems, through the cloud API.
    Evohome("evohome") => evohome::EvohomeConfig,
    /// Modbus meters and inverters (TCP or RTU) through a point map; SunSpec discovery.
    Modbus("modbus") => modbus::ModbusConfig,
    /// REHAU Nea Smart 2.0: mesura is the Modbus slave the base station writes to.
    Neasmart("neasmart") => neasmart::NeasmartConfig,
    /// A smart meter's P1 port (DSMR 2.2 to 5.0 and variants) over serial or TCP.
    Dsmr("dsmr") => dsmr::DsmrConfig,
    /// A HomeWizard-style P1 meter's local HTTP API (v1).
    Homewizard("homewizard") => homewizard::HomewizardConfig,
    /// Figures derived from stored counters: one's increase over another's per hour or day (a heat pump's COP).
    Derived("derived") => derived::DerivedConfig,
    /// Values other systems publish on MQTT (Tasmota, Zigbee2MQTT, Shelly, a BMS, any JSON).
    Mqtt("mqtt") => mqtt::MqttDeviceConfig,
    /// Day-ahead electricity prices (ENTSO-E, EnergyZero, aWATTar), stored per slot.
    Prices("prices") => prices::PricesConfig,
}

/// A device reader: one per device, owned by its task.
#[async_trait]
pub trait Monitor: Send {
    /// One poll, or for streaming devices the newest reading since the last call.
    async fn read(&mut self) -> Result<Vec<Reading>, MonitorError>;
    /// What this monitor can report.
    fn metrics(&self) -> &[MetricSpec];
    /// Whether [`metrics`](Monitor::metrics) names every metric this monitor can
    /// report under its configuration (its point map, its disks), so that a backend
    /// may forget what it published of any other (MQTT's Home Assistant entities).
    /// Types whose readings decide their metrics (a P1 meter's registers, zones a
    /// cloud service lists, MQTT topics with placeholders) keep `false`: theirs
    /// expire after a while without readings instead.
    fn metrics_complete(&self) -> bool {
        false
    }
    /// Totals of bad frames the monitor dropped on its own (CRC, framing), by
    /// kind, since it started: they never reach `read()` as errors because the next
    /// telegram is a second away, but they belong in /metrics.
    fn protocol_errors(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// The meter's monthly peaks (capacity tariff), when they changed since the
    /// last call or are due again; taken after each successful `read()`.
    fn take_monthly_peaks(&mut self) -> Option<MonthlyPeaks> {
        None
    }
    /// Numbers about a service the monitor runs beside its readings (the clients of
    /// a P1 port it re-serves), for /metrics; taken after each read.
    fn service_metrics(&self) -> Vec<ServiceMetric> {
        Vec::new()
    }
    /// The meter's identity as of the last read (a DSMR equipment id, a Multical
    /// serial), when the device reports one: a change means another meter, so its
    /// counters start a new epoch (src/energy/).
    fn identity(&self) -> Option<String> {
        None
    }
    /// Sets `point` to the engineering `value` on the device and reads it back
    /// (docs/control.md). Only types whose files allow writes override this; it
    /// runs in the device's task, between polls, on the poll's own link.
    async fn write(&mut self, _point: &str, _value: f64) -> Result<Written, WriteError> {
        Err(WriteError::NotWritable("this device type"))
    }
}

/// One sample of a monitor's own service, shown in /metrics as `name{device="…"}`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ServiceMetric {
    pub name: &'static str,
    /// The Prometheus type: `gauge` or `counter`.
    pub kind: &'static str,
    pub help: &'static str,
    pub value: f64,
}

/// What a monitor gets from the daemon besides its config.
#[derive(Debug, Clone)]
pub struct MonitorContext {
    pub id: DeviceId,
    pub clock: SharedClock,
    /// For state a monitor keeps between runs (tokens, caches).
    pub data_dir: PathBuf,
    /// The device's poll interval (its file's, else its type's default).
    pub poll_interval: std::time::Duration,
    /// The device's file: relative paths in it (a Modbus point map) are found
    /// beside it.
    pub file: PathBuf,
}

/// Every metric a device type can report, for `mesura devices`.
pub fn type_metrics(type_name: &str) -> Vec<MetricSpec> {
    DeviceKind::metrics(type_name)
}
