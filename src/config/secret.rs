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

/// Query parameter names that carry a credential when they contain one of these
/// (compared in lower case): `appid` is OpenWeatherMap's key, `sig`/`signature`
/// and `credential` sign pre-signed URLs, `x-api-key` and `access_token` contain
/// `key` and `token`.
const CREDENTIAL_NAMES: &[&str] = &[
    "token",
    "key",
    "secret",
    "pass",
    "pwd",
    "auth",
    "sig",
    "credential",
    "session",
    "appid",
    "jwt",
    "bearer",
];

/// Whether a query parameter called `name` (percent-encoded or not) holds a
/// credential. Errs on the side of hiding: `monkey=1` is hidden too.
pub fn is_credential_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace("%5f", "_").replace("%2d", "-");
    CREDENTIAL_NAMES.iter().any(|word| name.contains(word))
}

/// A URL fit to print: its user info (`user:password@`) becomes `***@` and the
/// value of every query parameter whose name suggests a credential becomes `***`
/// (see [`is_credential_name`]). Works on the text, so a URL that does not parse
/// is masked as well; anything else is left as it was.
pub fn mask_url(url: &str) -> String {
    let (before_fragment, fragment) = match url.find('#') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let (before_query, query) = match before_fragment.find('?') {
        Some(i) => (&before_fragment[..i], Some(&before_fragment[i + 1..])),
        None => (before_fragment, None),
    };
    let mut out = String::with_capacity(url.len());
    let rest = match before_query.find("://") {
        Some(i) => {
            out.push_str(&before_query[..i + 3]);
            &before_query[i + 3..]
        }
        None => before_query,
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str("***");
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    out.push_str(path);
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_credential_name(name) => format!("{name}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out.push_str(fragment);
    out
}

/// `serialize_with` for URL fields of the config: `mesura check` prints the
/// config through serde, so the URL is masked there as everywhere else.
pub fn serialize_masked_url<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&mask_url(url))
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

    #[test]
    fn urls_lose_their_user_info_and_credential_parameters() {
        let cases = [
            ("https://example.com/write?db=home", "https://example.com/write?db=home"),
            (
                "https://alice:hunter2@example.com:8086/write?db=home&token=t0k3n",
                "https://***@example.com:8086/write?db=home&token=***",
            ),
            ("http://t0k3n@example.com", "http://***@example.com"),
            ("http://u:p@ss@example.com/a@b", "http://***@example.com/a@b"),
            (
                "https://x/?appid=K&lat=52.1&API_KEY=K&x-api-key=K&Access_Token=K&units=metric",
                "https://x/?appid=***&lat=52.1&API_KEY=***&x-api-key=***&Access_Token=***&units=metric",
            ),
            (
                "https://x/?password=a&passwd=b&pass=c&secret=d&auth=e&signature=f&sig=g&X-Amz-Credential=h",
                "https://x/?password=***&passwd=***&pass=***&secret=***&auth=***&signature=***&sig=***&X-Amz-Credential=***",
            ),
            ("https://x/?token&key=&flag", "https://x/?token&key=***&flag"),
            ("https://x/p?apikey=K#frag", "https://x/p?apikey=***#frag"),
            ("not a url ?token=K", "not a url ?token=***"),
            ("https://[::1]:9/?org=o&bucket=b", "https://[::1]:9/?org=o&bucket=b"),
        ];
        for (url, masked) in cases {
            assert_eq!(mask_url(url), masked, "{url}");
        }
    }

    #[test]
    fn credential_names() {
        for name in [
            "token",
            "KEY",
            "api_key",
            "api%5Fkey",
            "x-api-key",
            "Authorization",
            "session_id",
        ] {
            assert!(is_credential_name(name), "{name}");
        }
        for name in ["db", "org", "bucket", "precision", "lat", "units", "rp"] {
            assert!(!is_credential_name(name), "{name}");
        }
    }
}
