//! Writing to a device (issue 23, "control"): what a write asks for, what it
//! answers, and why it was refused. A monitor opts in by overriding
//! [`Monitor::write`](super::Monitor::write); every other type keeps the default
//! "not writable" answer. The write runs in the device's own task, on the link
//! its polls use, so it is serialised with them (daemon/supervisor.rs).

use tokio::sync::oneshot;

use super::MonitorError;

/// A write that was applied: the value before, and the value read back after.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Written {
    pub point: String,
    /// `None` when the point had no value yet (a Nea Smart register the base
    /// never wrote).
    pub old: Option<f64>,
    /// The value read back from the device after writing.
    pub new: f64,
    pub unit: &'static str,
}

/// Why a write was not applied. The first four are decided before anything is
/// sent; `Refused` and `Link` keep apart "the device said no" from "the link
/// failed", as [`MonitorError`] does for reads.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0} cannot be written to")]
    NotWritable(&'static str),
    #[error("no writable point `{point}`; writable points: {writable}")]
    UnknownPoint { point: String, writable: String },
    #[error("`{point}`: {value} is outside the allowed range {min} to {max}")]
    OutOfRange {
        point: String,
        value: f64,
        min: f64,
        max: f64,
    },
    #[error("`{point}`: {reason}")]
    Invalid { point: String, reason: String },
    #[error("the device refused the write: {0}")]
    Refused(#[source] MonitorError),
    #[error("the link to the device failed: {0}")]
    Link(#[source] MonitorError),
    #[error("the device is not running (its monitor could not start, or it was stopped)")]
    Gone,
}

impl WriteError {
    /// A read or write failure of the device, sorted as the monitors sort them:
    /// a refusal stays a refusal, everything else is the link.
    pub fn from_monitor(e: MonitorError) -> Self {
        match e {
            e @ MonitorError::Refused { .. } => WriteError::Refused(e),
            e => WriteError::Link(e),
        }
    }

    /// A short stable name for the API's answer and the audit log.
    pub fn kind(&self) -> &'static str {
        match self {
            WriteError::NotWritable(_) => "not_writable",
            WriteError::UnknownPoint { .. } => "unknown_point",
            WriteError::OutOfRange { .. } => "out_of_range",
            WriteError::Invalid { .. } => "invalid_value",
            WriteError::Refused(_) => "device_refused",
            WriteError::Link(_) => "link_failed",
            WriteError::Gone => "device_not_running",
        }
    }
}

/// Checks `value` against a point's `min`/`max` before anything is sent.
pub fn check_range(point: &str, value: f64, min: f64, max: f64) -> Result<(), WriteError> {
    if !value.is_finite() || value < min || value > max {
        return Err(WriteError::OutOfRange {
            point: point.to_owned(),
            value,
            min,
            max,
        });
    }
    Ok(())
}

/// One write on its way to a device task, from the API.
#[derive(Debug)]
pub struct WriteCommand {
    pub point: String,
    /// The engineering value (°C, W, …): the monitor encodes the registers.
    pub value: f64,
    /// Who asked, for the audit log: the token's identity and the client address.
    pub who: String,
    pub reply: oneshot::Sender<Result<Written, WriteError>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_is_inclusive_and_rejects_nan() {
        assert!(check_range("p", 5.0, 5.0, 30.0).is_ok());
        assert!(check_range("p", 30.0, 5.0, 30.0).is_ok());
        assert!(matches!(
            check_range("p", 30.5, 5.0, 30.0),
            Err(WriteError::OutOfRange { .. })
        ));
        assert!(check_range("p", f64::NAN, 5.0, 30.0).is_err());
    }

    #[test]
    fn refusals_and_link_failures_stay_apart() {
        let refused = WriteError::from_monitor(MonitorError::refused("exception"));
        let link = WriteError::from_monitor(MonitorError::link("timeout"));
        assert_eq!(refused.kind(), "device_refused");
        assert_eq!(link.kind(), "link_failed");
        assert!(std::error::Error::source(&refused).is_some());
    }
}
