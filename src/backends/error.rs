//! Why a backend could not store or send a batch, and what failed underneath.
//!
//! The router only needs to know whether to retry ([`BackendError::is_transient`]);
//! the log needs the sentence (which file, which setting, the cause in words); and
//! `std::error::Error::source()` reaches the typed cause (SQLite, io, HTTP, TLS).

use std::error::Error;
use std::fmt;

/// Why a write, a flush or an open failed.
#[derive(Debug)]
pub enum BackendError {
    /// Worth retrying: disk full, database busy, broker or server unreachable.
    Transient { message: String, source: Option<Cause> },
    /// The batch will never be accepted as it is: retrying would block the queue.
    Permanent { message: String, source: Option<Cause> },
}

error_causes!(
    /// What failed underneath a [`BackendError`].
    Cause {
        Io(std::io::Error),
        Sqlite(rusqlite::Error),
        Csv(csv::Error),
        Http(reqwest::Error),
        Tls(rustls::Error),
        /// The blocking task that ran the work panicked or was cancelled.
        Task(tokio::task::JoinError),
    }
);

impl BackendError {
    pub fn transient(message: impl Into<String>) -> Self {
        BackendError::Transient {
            message: message.into(),
            source: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        BackendError::Permanent {
            message: message.into(),
            source: None,
        }
    }

    /// Keeps `cause` as this error's source.
    pub fn caused_by(mut self, cause: impl Into<Cause>) -> Self {
        match &mut self {
            BackendError::Transient { source, .. } | BackendError::Permanent { source, .. } => {
                *source = Some(cause.into())
            }
        }
        self
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Transient { .. })
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Transient { message, .. } | BackendError::Permanent { message, .. } => f.write_str(message),
        }
    }
}

impl Error for BackendError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            BackendError::Transient { source, .. } | BackendError::Permanent { source, .. } => {
                source.as_ref().map(Cause::as_error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_chain_reaches_the_typed_cause_and_the_text_stays() {
        let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
        let e = BackendError::transient(format!("sqlite: {busy}")).caused_by(busy);
        assert!(e.is_transient());
        assert!(e.to_string().starts_with("sqlite: "), "{e}");
        let sqlite = e.source().and_then(|s| s.downcast_ref::<rusqlite::Error>());
        assert_eq!(
            sqlite.and_then(rusqlite::Error::sqlite_error_code),
            Some(rusqlite::ErrorCode::DatabaseBusy)
        );

        let e = BackendError::permanent("uplink: url must start with http:// or https://");
        assert!(!e.is_transient() && e.source().is_none());
        assert_eq!(e.to_string(), "uplink: url must start with http:// or https://");
    }
}
