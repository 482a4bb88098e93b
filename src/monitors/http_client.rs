//! HTTP plumbing shared by the cloud monitors (OpenWeatherMap, Evohome): one way
//! to turn transport failures and HTTP answers into [`MonitorError`]s, and a rate
//! limit suspension that sends no request while a server has asked us to wait.

use std::time::Duration;

use super::MonitorError;
use crate::host::clock::SharedClock;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Why a JSON answer from a cloud service could not be used. The decoders are pure
/// and return this; the monitor turns it into [`MonitorError::InvalidData`] with the
/// parser's error kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The body does not parse as JSON (an HTML error page, a cut-off body).
    #[error("the answer is not JSON ({0})")]
    NotJson(#[source] serde_json::Error),
    /// Valid JSON, but not the answer asked for: says what is missing.
    #[error("{0}")]
    Shape(String),
}

impl AnswerError {
    /// The error for `service`, with the JSON error kept as its cause.
    pub fn into_monitor_error(self, service: &str) -> MonitorError {
        let error = MonitorError::invalid_data(format!("{service}: {self}"));
        match self {
            AnswerError::NotJson(e) => error.caused_by(e),
            AnswerError::Shape(_) => error,
        }
    }
}

/// Parses a body as JSON.
pub fn json_answer(body: &[u8]) -> Result<serde_json::Value, AnswerError> {
    serde_json::from_slice(body).map_err(AnswerError::NotJson)
}

/// How long to stay away after a rate-limit answer that does not say how long.
pub const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(15 * 60);
/// A Retry-After longer than this is taken as this: a server (or a proxy) asking
/// for days must not silence a device until the next restart.
const MAX_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(6 * 3600);

/// A client with a total timeout per request, so a silent server never holds a poll.
pub fn client(timeout: Duration) -> Result<reqwest::Client, MonitorError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("mesura/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            let e = e.without_url();
            MonitorError::config(format!("cannot set up the HTTP client: {e}")).caused_by(e)
        })
}

/// A transport failure as a link error. The URL is stripped: for OpenWeatherMap
/// it carries the API key in its query string, and errors end up in logs.
pub fn transport_error(what: &str, e: reqwest::Error, timeout: Duration) -> MonitorError {
    let e = e.without_url();
    if e.is_timeout() {
        return MonitorError::link(format!(
            "{what}: no answer within {}",
            humantime::format_duration(timeout)
        ))
        .caused_by(e);
    }
    // The top-level message of a reqwest error is generic ("error sending request");
    // the cause (connection refused, DNS) is what a user can act on.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    MonitorError::link(format!("{what}: {message}")).caused_by(e)
}

/// The start of a response body, for an error message: enough to recognise an
/// error page, never a whole HTML document in a log line.
pub fn snippet(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut out: String = text.chars().take(MAX).collect();
    out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > MAX {
        out.push('…');
    }
    if out.is_empty() {
        out.push_str("(empty body)");
    }
    out
}

/// The wait a `Retry-After` header asks for: delay-seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    parse_retry_after(value, now)
}

pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RATE_LIMIT_PAUSE));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.to_utc();
    let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
    Some(wait.min(MAX_RATE_LIMIT_PAUSE))
}

/// While a server has asked us to wait, every read fails fast with
/// [`MonitorError::RateLimited`] and sends nothing. Kept on the monitor's wall
/// clock (tests drive it); a clock that jumps backwards cannot stretch a pause
/// beyond what was asked, because the length is remembered too.
#[derive(Debug)]
pub struct Suspension {
    clock: SharedClock,
    /// From when, and for how long.
    window: Option<(DateTime<Utc>, Duration)>,
    /// Where the pause is kept, so a restart (a config edit) does not forget it and
    /// ask again inside the service's rate-limit window.
    file: Option<std::path::PathBuf>,
}

/// A pause as kept on disk.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SavedPause {
    since: DateTime<Utc>,
    seconds: f64,
}

impl Suspension {
    pub fn new(clock: SharedClock) -> Self {
        Suspension {
            clock,
            window: None,
            file: None,
        }
    }

    /// A suspension kept in `file` (beside the device's token cache): a pause that
    /// is still running there is resumed.
    pub fn persistent(clock: SharedClock, file: std::path::PathBuf, device: &str) -> Self {
        let window = match std::fs::read(&file) {
            Ok(bytes) => match serde_json::from_slice::<SavedPause>(&bytes) {
                Ok(p) if p.seconds.is_finite() && p.seconds >= 0.0 => {
                    Some((p.since, Duration::from_secs_f64(p.seconds).min(MAX_RATE_LIMIT_PAUSE)))
                }
                Ok(_) | Err(_) => {
                    tracing::warn!(device, file = %file.display(), "ignoring a damaged rate-limit file");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(device, file = %file.display(), error = %e, "cannot read the rate-limit file");
                None
            }
        };
        let suspension = Suspension {
            clock,
            window,
            file: Some(file),
        };
        if let Some(left) = suspension.remaining() {
            tracing::info!(
                device,
                "still rate-limited from before the restart: not asking for another {}",
                humantime::format_duration(round_secs(left))
            );
        }
        suspension
    }

    /// What is left of the pause, if any.
    pub fn remaining(&self) -> Option<Duration> {
        let (since, length) = self.window?;
        let elapsed = (self.clock.now() - since).to_std().unwrap_or(Duration::ZERO);
        let left = length.saturating_sub(elapsed);
        (!left.is_zero()).then_some(left)
    }

    /// `Err` while suspended, carrying how much of the wait is left.
    pub fn check(&self, service: &str) -> Result<(), MonitorError> {
        match self.remaining() {
            Some(left) => Err(MonitorError::RateLimited {
                message: format!(
                    "{service} asked us to slow down; not asking again for another {}",
                    humantime::format_duration(round_secs(left))
                ),
                retry_after: left,
            }),
            None => Ok(()),
        }
    }

    /// Starts a pause of `wait` (the server's Retry-After, or the default) and
    /// returns the error that says so.
    pub fn suspend(&mut self, service: &str, wait: Option<Duration>, detail: &str) -> MonitorError {
        let wait = wait.unwrap_or(DEFAULT_RATE_LIMIT_PAUSE).min(MAX_RATE_LIMIT_PAUSE);
        let since = self.clock.now();
        self.window = Some((since, wait));
        if let Some(file) = &self.file {
            let saved = SavedPause {
                since,
                seconds: wait.as_secs_f64(),
            };
            if let Err(e) = save_small_file(file, &saved) {
                tracing::warn!(file = %file.display(), error = %e, "cannot keep the rate-limit pause; a restart would forget it");
            }
        }
        MonitorError::RateLimited {
            message: format!(
                "{service} rate limit ({detail}); pausing requests for {}",
                humantime::format_duration(round_secs(wait))
            ),
            retry_after: wait,
        }
    }

    pub fn is_suspended(&self) -> bool {
        self.remaining().is_some()
    }
}

/// Writes a small JSON file whole or not at all (a temporary file renamed over it).
fn save_small_file(path: &std::path::Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// An `http://` or `https://` URL, or the error for `key`.
pub fn check_url(key: &str, url: &str) -> Result<(), (String, String)> {
    let ok = ["http://", "https://"]
        .iter()
        .any(|scheme| url.strip_prefix(scheme).is_some_and(|rest| !rest.is_empty()));
    if ok {
        Ok(())
    } else {
        Err((
            key.into(),
            format!(
                "`{}` is not an http:// or https:// URL",
                crate::config::secret::mask_url(url)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2025-03-01T12:00:00Z").map(|t| t.to_utc());
        let Ok(now) = now else { panic!("time") };
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Sat, 01 Mar 2025 12:10:00 GMT", now),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            parse_retry_after("Sat, 01 Mar 2025 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("9999999", now), Some(MAX_RATE_LIMIT_PAUSE));
    }

    /// A config edit restarts the device: the pause a 429 started goes on, and a
    /// damaged file only costs the pause, never the device.
    #[tokio::test(start_paused = true)]
    async fn a_pause_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svc-dev.ratelimit.json");
        let clock: SharedClock = std::sync::Arc::new(crate::host::clock::MonotonicClock::starting_at(Utc::now()));
        let mut first = Suspension::persistent(clock.clone(), file.clone(), "dev");
        assert!(first.check("svc").is_ok());
        first.suspend("svc", Some(Duration::from_secs(900)), "HTTP 429");
        drop(first);
        tokio::time::advance(Duration::from_secs(300)).await;
        let restarted = Suspension::persistent(clock.clone(), file.clone(), "dev");
        match restarted.check("svc") {
            Err(MonitorError::RateLimited { retry_after, .. }) => assert_eq!(retry_after, Duration::from_secs(600)),
            other => panic!("the pause was forgotten: {other:?}"),
        }
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(Suspension::persistent(clock.clone(), file.clone(), "dev")
            .check("svc")
            .is_ok());
        std::fs::write(&file, b"{not json").unwrap();
        assert!(Suspension::persistent(clock, file, "dev").check("svc").is_ok());
    }

    #[test]
    fn snippets_are_short_and_single_line() {
        assert_eq!(snippet(b""), "(empty body)");
        assert_eq!(snippet(b"  a\n  b "), "a b");
        let long = "x".repeat(500);
        assert_eq!(snippet(long.as_bytes()).chars().count(), 201);
    }

    #[tokio::test(start_paused = true)]
    async fn a_suspension_fails_fast_until_it_ends() {
        let clock: SharedClock = std::sync::Arc::new(crate::host::clock::MonotonicClock::starting_at(Utc::now()));
        let mut s = Suspension::new(clock);
        assert!(s.check("svc").is_ok());
        let e = s.suspend("svc", None, "HTTP 429");
        assert!(matches!(e, MonitorError::RateLimited { retry_after, .. } if retry_after == DEFAULT_RATE_LIMIT_PAUSE));
        tokio::time::advance(Duration::from_secs(60)).await;
        match s.check("svc") {
            Err(MonitorError::RateLimited { retry_after, .. }) => {
                assert_eq!(retry_after, DEFAULT_RATE_LIMIT_PAUSE - Duration::from_secs(60))
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
        tokio::time::advance(DEFAULT_RATE_LIMIT_PAUSE).await;
        assert!(s.check("svc").is_ok());
        assert!(!s.is_suspended());
    }
}
