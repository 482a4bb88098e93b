//! Monitors read devices. One module per device type; [`build`] is the one place
//! that turns a device's config into its monitor.

pub mod bme280;
pub mod device_time;
pub mod dsmr;
mod error;
pub mod evohome;
pub mod homewizard;
pub mod http_client;
pub mod modbus;
pub mod multical;
pub mod neasmart;
pub mod openweathermap;
pub mod p1_metrics;
pub mod simulated;
pub mod system;

use std::path::PathBuf;

use async_trait::async_trait;

pub use self::error::{describe_link_io, Cause, MonitorError};
use crate::clock::SharedClock;
use crate::config::{DeviceConfig, DeviceKind};
use crate::reading::{DeviceId, MetricSpec, Reading};

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
