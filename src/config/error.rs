//! Configuration errors. Every one names the file; where the YAML is at fault it
//! also names the line, column and key, so a user can go straight to the mistake.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, permissions, a directory).
    #[error("{}: cannot read: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or a value does not fit its key.
    #[error("{}:{location}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        location: Location,
        message: String,
    },
    /// An environment override (`MESURA_*`) does not fit the key it maps to.
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

impl ConfigError {
    pub fn invalid(file: &Path, location: Location, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            file: file.to_path_buf(),
            location,
            message: message.into(),
        }
    }

    /// A config error is fixed by editing a file, never by retrying; the exception
    /// is a read racing an editor's save, which the watcher retries on its next event.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConfigError::Io { .. })
    }

    pub fn file(&self) -> Option<&Path> {
        match self {
            ConfigError::Io { file, .. } | ConfigError::Invalid { file, .. } => Some(file),
            ConfigError::Env { .. } => None,
        }
    }
}

/// Where in a file an error is: 1-based line and column, and the key path
/// (`backends.sqlite.flush_interval`) when known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
    pub key: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} column {}", self.line, self.column)?;
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        Ok(())
    }
}
