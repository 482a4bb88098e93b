//! Monitors read devices. One module per device type, registered by one line in
//! the `device_types!` list below; [`build`] turns a device's config into its monitor.

pub mod bme280;
pub mod device_time;
mod device_type;
pub mod dsmr;
pub mod evohome;
pub mod homewizard;
pub mod http;
pub mod modbus;
pub mod multical;
pub mod neasmart;
pub mod openweathermap;
pub mod simulated;
pub mod system;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

pub use self::device_type::DeviceType;
use crate::clock::SharedClock;
use crate::config::DeviceConfig;
use crate::reading::{DeviceId, MetricSpec, Reading};

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
}

/// Why a read failed. Like tokio-modbus, "the link failed" is kept apart from
/// "the device answered but refused": the first reconnects, the second does not.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MonitorError {
    /// The transport failed: I/O error, timeout, connection refused, port gone.
    #[error("link failed: {0}")]
    Link(String),
    /// The device answered but refused (an exception, an HTTP 5xx, a busy reply).
    #[error("device refused: {0}")]
    Refused(String),
    /// The device sent data that failed a check (CRC, framing, JSON shape): dropped.
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// The settings cannot work as they are (credentials rejected, a port that is
    /// not a serial device): retried only after the breaker's cool-down.
    #[error("configuration: {0}")]
    Config(String),
    /// The service asked us to slow down (HTTP 429, a quota error): nothing is
    /// sent until `retry_after` has passed, and the supervisor waits at least that
    /// long before the next read instead of its usual backoff.
    #[error("rate limited: {message}")]
    RateLimited { message: String, retry_after: Duration },
}

impl MonitorError {
    /// Whether retrying soon may help.
    pub fn is_transient(&self) -> bool {
        !matches!(self, MonitorError::Config(_))
    }

    /// A short label for metrics and status.
    pub fn kind(&self) -> &'static str {
        match self {
            MonitorError::Link(_) => "link",
            MonitorError::Refused(_) => "refused",
            MonitorError::InvalidData(_) => "invalid_data",
            MonitorError::Config(_) => "config",
            MonitorError::RateLimited { .. } => "rate_limited",
        }
    }

    /// How long the device asked us to stay away, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            MonitorError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// What an I/O error on a device link means, in words a user reading the log
/// understands, followed by the error itself: "Resource temporarily unavailable
/// (os error 11)" on a socket or serial port means the peer went away, "Operation
/// now in progress (os error 115)" means a connect got no answer.
pub fn describe_link_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    const EAGAIN: i32 = 11;
    const EINPROGRESS: i32 = 115;
    const EHOSTUNREACH: i32 = 113;
    let meaning = match (e.kind(), e.raw_os_error()) {
        (_, Some(EINPROGRESS | EHOSTUNREACH)) | (ErrorKind::TimedOut, _) => Some("no answer"),
        (_, Some(EAGAIN))
        | (
            ErrorKind::WouldBlock
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
            | ErrorKind::NotConnected,
            _,
        ) => Some("connection lost"),
        _ => None,
    };
    match meaning {
        Some(meaning) => format!("{meaning} ({e})"),
        None => e.to_string(),
    }
}

/// A device reader: one per device, owned by its task.
#[async_trait]
pub trait Monitor: Send {
    /// One poll, or for streaming devices the newest reading since the last call.
    async fn read(&mut self) -> Result<Vec<Reading>, MonitorError>;
    /// What this monitor can report.
    fn metrics(&self) -> &[MetricSpec];
    /// Totals of bad frames the monitor dropped on its own (CRC, framing), by
    /// kind, since it started: they never reach `read()` as errors because the next
    /// telegram is a second away, but they belong in /metrics.
    fn protocol_errors(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// What a monitor gets from the daemon besides its config.
#[derive(Debug, Clone)]
pub struct MonitorContext {
    pub id: DeviceId,
    pub clock: SharedClock,
    /// For state a monitor keeps between runs (tokens, caches).
    pub data_dir: PathBuf,
}

/// Builds the monitor for a device.
pub fn build(config: &DeviceConfig, ctx: MonitorContext) -> Result<Box<dyn Monitor>, MonitorError> {
    config.kind.build(config, ctx)
}

/// Every metric a device type can report, for `mesura devices`.
pub fn type_metrics(type_name: &str) -> Vec<MetricSpec> {
    DeviceKind::metrics(type_name)
}

/// A metric name made at run time (point maps, zones) as the `&'static str` a
/// [`MetricSpec`] holds. Each distinct name is leaked once and reused, so
/// rebuilding monitors on every config reload does not grow memory.
pub fn intern(name: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    // A poisoned lock only means another thread panicked while inserting; the
    // set is still consistent.
    let mut names = NAMES
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_meter_reads_as_connection_lost_or_no_answer_with_the_io_error_kept() {
        let eagain = describe_link_io(&std::io::Error::from_raw_os_error(11));
        assert!(
            eagain.starts_with("connection lost (") && eagain.contains("os error 11"),
            "{eagain}"
        );
        let inprogress = describe_link_io(&std::io::Error::from_raw_os_error(115));
        assert!(
            inprogress.starts_with("no answer (") && inprogress.contains("os error 115"),
            "{inprogress}"
        );
        let reset = describe_link_io(&std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(reset.starts_with("connection lost"), "{reset}");
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(
            describe_link_io(&denied),
            denied.to_string(),
            "other errors say what they say"
        );
    }
}
