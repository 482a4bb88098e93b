//! Monitors read devices. One module per device type; [`build`] is the one place
//! that turns a device's config into its monitor.

pub mod bme280;
pub mod device_time;
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

use crate::clock::SharedClock;
use crate::config::{DeviceConfig, DeviceKind};
use crate::reading::{DeviceId, MetricSpec, Reading};

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
    Ok(match &config.kind {
        DeviceKind::Simulated(c) => Box::new(simulated::SimulatedMonitor::new(c, ctx)),
        DeviceKind::Multical(c) => Box::new(multical::MulticalMonitor::new(c, config.poll_interval(), ctx)?),
        DeviceKind::Bme280(c) => Box::new(bme280::Bme280Monitor::new(c, ctx)?),
        DeviceKind::System(c) => Box::new(system::SystemMonitor::new(c, ctx)),
        DeviceKind::Openweathermap(c) => Box::new(openweathermap::OpenWeatherMapMonitor::new(
            c,
            config.poll_interval(),
            ctx,
        )?),
        DeviceKind::Evohome(c) => Box::new(evohome::EvohomeMonitor::new(c, ctx)?),
        DeviceKind::Modbus(c) => {
            let dir = config.file.parent().unwrap_or_else(|| std::path::Path::new("."));
            Box::new(modbus::ModbusMonitor::new(c, dir, ctx)?)
        }
        DeviceKind::Neasmart(c) => Box::new(neasmart::NeasmartMonitor::new(c, ctx)?),
        DeviceKind::Dsmr(c) => Box::new(dsmr::DsmrMonitor::new(c, ctx, config.poll_interval())?),
        DeviceKind::Homewizard(c) => Box::new(homewizard::HomewizardMonitor::new(c, ctx)?),
    })
}

/// Every metric a device type can report, for `mesura devices`.
pub fn type_metrics(type_name: &str) -> Vec<MetricSpec> {
    match type_name {
        "simulated" => simulated::all_metrics(),
        "multical" => multical::all_metrics(),
        "bme280" => bme280::all_metrics(),
        "system" => system::all_metrics(),
        "openweathermap" => openweathermap::all_metrics(),
        "evohome" => evohome::all_metrics(),
        "modbus" => modbus::all_metrics(),
        "neasmart" => neasmart::all_metrics(),
        "dsmr" => dsmr::all_metrics(),
        "homewizard" => homewizard::all_metrics(),
        _ => Vec::new(),
    }
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
