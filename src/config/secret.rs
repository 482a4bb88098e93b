//! Secrets (passwords, tokens, API keys): never printed, never logged.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// A string that shows as `***` wherever it is printed, logged or serialised.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it (an auth header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

/// Reads a secret from a file (`password_file:`, `token_file:`). A relative name
/// that exists in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`) is read from
/// there. One trailing newline is dropped, as `echo secret > file` leaves one.
pub fn read_secret_file(path: &std::path::Path) -> std::io::Result<Secret> {
    let path = match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if path.is_relative() && std::path::Path::new(&dir).join(path).exists() => {
            std::path::Path::new(&dir).join(path)
        }
        _ => path.to_path_buf(),
    };
    let text = std::fs::read_to_string(&path)?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(Secret::new(text.strip_suffix('\r').unwrap_or(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_shows() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(serde_json::to_string(&s).ok().as_deref(), Some("\"***\""));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn secret_files_drop_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret \n").unwrap();
        assert_eq!(read_secret_file(&file).unwrap().expose(), "s3cret ");
    }
}
