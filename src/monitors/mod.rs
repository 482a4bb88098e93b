//! Monitors read devices. One module per device type; [`build`] is the one place
//! that turns a device's config into its monitor.

pub mod dsmr;
pub mod homewizard;
pub mod simulated;

use std::path::PathBuf;

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
        }
    }
}

/// A device reader: one per device, owned by its task.
#[async_trait]
pub trait Monitor: Send {
    /// One poll, or for streaming devices the newest reading since the last call.
    async fn read(&mut self) -> Result<Vec<Reading>, MonitorError>;
    /// What this monitor can report.
    fn metrics(&self) -> &[MetricSpec];
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
        DeviceKind::Dsmr(c) => Box::new(dsmr::DsmrMonitor::new(c, ctx, config.poll_interval())?),
        DeviceKind::Homewizard(c) => Box::new(homewizard::HomewizardMonitor::new(c, ctx)?),
    })
}

/// Every metric a device type can report, for `mesura devices`.
pub fn type_metrics(type_name: &str) -> Vec<MetricSpec> {
    match type_name {
        "simulated" => simulated::all_metrics(),
        "dsmr" => dsmr::all_metrics(),
        "homewizard" => homewizard::all_metrics(),
        _ => Vec::new(),
    }
}
