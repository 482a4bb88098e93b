//! Why a read failed, and what failed underneath.
//!
//! Like tokio-modbus's `Error`, "the link failed" is kept apart from "the device
//! answered but refused": the first reconnects, the second does not. Each error
//! carries the sentence a user reads (in logs and /health: what was asked, the
//! cause in words, a hint) and, where there is one, the cause itself as a typed
//! [`Cause`], so `std::error::Error::source()` reaches the io, HTTP, serial or
//! Modbus error that started it.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use linux_embedded_hal::i2cdev::linux::LinuxI2CError;

use crate::protocols::bme280::Bme280Error;
use crate::protocols::kmp::KmpError;
use crate::protocols::modbus::point::DecodeError;

/// Why a read failed.
#[derive(Debug)]
pub enum MonitorError {
    /// The transport failed: I/O error, timeout, connection refused, port gone.
    Link { message: String, source: Option<Cause> },
    /// The device answered but refused (an exception, an HTTP 5xx, a busy reply).
    Refused { message: String, source: Option<Cause> },
    /// The device sent data that failed a check (CRC, framing, JSON shape): dropped.
    InvalidData { message: String, source: Option<Cause> },
    /// The settings cannot work as they are (credentials rejected, a port that is
    /// not a serial device): retried only after the breaker's cool-down.
    Config { message: String, source: Option<Cause> },
    /// The service asked us to slow down (HTTP 429, a quota error): nothing is
    /// sent until `retry_after` has passed, and the supervisor waits at least that
    /// long before the next read instead of its usual backoff.
    RateLimited { message: String, retry_after: Duration },
}

error_causes!(
    /// What failed underneath a [`MonitorError`].
    Cause {
        Io(std::io::Error),
        Serial(tokio_serial::Error),
        Http(reqwest::Error),
        Json(serde_json::Error),
        Modbus(tokio_modbus::Error),
        ModbusException(tokio_modbus::ExceptionCode),
        ModbusValue(DecodeError),
        Kmp(KmpError),
        Bme280(Bme280Error),
        Prices(crate::protocols::prices::PriceError),
        I2c(LinuxI2CError),
        /// The SQLite file a derived device reads.
        Sqlite(rusqlite::Error),
        /// A task the monitor ran its blocking work on panicked or was cancelled.
        Task(tokio::task::JoinError),
    }
);

impl MonitorError {
    pub fn link(message: impl Into<String>) -> Self {
        MonitorError::Link {
            message: message.into(),
            source: None,
        }
    }

    pub fn refused(message: impl Into<String>) -> Self {
        MonitorError::Refused {
            message: message.into(),
            source: None,
        }
    }

    pub fn invalid_data(message: impl Into<String>) -> Self {
        MonitorError::InvalidData {
            message: message.into(),
            source: None,
        }
    }

    pub fn config(message: impl Into<String>) -> Self {
        MonitorError::Config {
            message: message.into(),
            source: None,
        }
    }

    /// Keeps `cause` as this error's source. A rate limit is an answer, not a
    /// failure underneath, so it keeps none.
    pub fn caused_by(mut self, cause: impl Into<Cause>) -> Self {
        match &mut self {
            MonitorError::Link { source, .. }
            | MonitorError::Refused { source, .. }
            | MonitorError::InvalidData { source, .. }
            | MonitorError::Config { source, .. } => *source = Some(cause.into()),
            MonitorError::RateLimited { .. } => {}
        }
        self
    }

    /// The sentence after the kind: what failed, why, and what to do.
    pub fn message(&self) -> &str {
        match self {
            MonitorError::Link { message, .. }
            | MonitorError::Refused { message, .. }
            | MonitorError::InvalidData { message, .. }
            | MonitorError::Config { message, .. }
            | MonitorError::RateLimited { message, .. } => message,
        }
    }

    /// Whether retrying soon may help.
    pub fn is_transient(&self) -> bool {
        !matches!(self, MonitorError::Config { .. })
    }

    /// A short label for metrics and status.
    pub fn kind(&self) -> &'static str {
        match self {
            MonitorError::Link { .. } => "link",
            MonitorError::Refused { .. } => "refused",
            MonitorError::InvalidData { .. } => "invalid_data",
            MonitorError::Config { .. } => "config",
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

impl fmt::Display for MonitorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            MonitorError::Link { .. } => "link failed",
            MonitorError::Refused { .. } => "device refused",
            MonitorError::InvalidData { .. } => "invalid data",
            MonitorError::Config { .. } => "configuration",
            MonitorError::RateLimited { .. } => "rate limited",
        };
        write!(f, "{kind}: {}", self.message())
    }
}

impl Error for MonitorError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            MonitorError::Link { source, .. }
            | MonitorError::Refused { source, .. }
            | MonitorError::InvalidData { source, .. }
            | MonitorError::Config { source, .. } => source.as_ref().map(Cause::as_error),
            MonitorError::RateLimited { .. } => None,
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

    #[test]
    fn the_source_chain_reaches_the_typed_cause_and_the_text_stays() {
        let io = std::io::Error::from_raw_os_error(11);
        let e = MonitorError::link(format!("/dev/ttyUSB0: {}", describe_link_io(&io))).caused_by(io);
        assert!(
            e.to_string()
                .starts_with("link failed: /dev/ttyUSB0: connection lost ("),
            "{e}"
        );
        let source = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(source.and_then(std::io::Error::raw_os_error), Some(11));
        assert_eq!((e.kind(), e.is_transient()), ("link", true));

        let refused = MonitorError::refused("holding 40001: exception IllegalDataAddress")
            .caused_by(tokio_modbus::ExceptionCode::IllegalDataAddress);
        let code = refused
            .source()
            .and_then(|s| s.downcast_ref::<tokio_modbus::ExceptionCode>());
        assert_eq!(code, Some(&tokio_modbus::ExceptionCode::IllegalDataAddress));
        assert_eq!(refused.kind(), "refused");

        let config = MonitorError::config("no such port");
        assert!(config.source().is_none() && !config.is_transient());
        assert_eq!(config.to_string(), "configuration: no such port");
        let limited = MonitorError::RateLimited {
            message: "429".into(),
            retry_after: Duration::from_secs(60),
        }
        .caused_by(std::io::Error::from(std::io::ErrorKind::Other));
        assert!(limited.source().is_none());
        assert_eq!(limited.to_string(), "rate limited: 429");
    }
}
